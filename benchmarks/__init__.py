"""fastim's benchmark: a picows load generator, scenarios S1-S3 of issue 7, and one command to run them."""
