"""The names of what batchery sends: the API sends by name, and never imports the code that runs it."""

CHUNK_TASK = "batchery.run_chunk"
