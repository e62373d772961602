"""What `bench compare` writes: the results vocabulary, tables and figures."""
