"""Shaping stored records into API bodies where more than one source feeds a body."""
