"""A reward module that fails while it is imported (as one importing a missing service would)."""
raise RuntimeError("GRADER_URL is not set")
