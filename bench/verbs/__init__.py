"""One module per `bench` verb: its options, the call, and what it prints."""
