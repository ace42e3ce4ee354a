"""End-to-end tests: the test page in a real headless Chromium against real fastim processes."""
