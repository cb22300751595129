"""The API's database work: queries and writes, with psycopg errors translated to API errors."""
