"""The generation engine: requests in, four provenance-marked JPEGs out. Never imports discord or slack."""
