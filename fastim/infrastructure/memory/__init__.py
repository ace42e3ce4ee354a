"""In-process adapters: the embedded single-node backend and the honest fakes of the tests."""
