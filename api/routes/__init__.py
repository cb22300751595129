"""HTTP routes: parse, call a store function, shape the answer."""
