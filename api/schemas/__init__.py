"""Request and response bodies (pydantic): the HTTP contract in types."""
