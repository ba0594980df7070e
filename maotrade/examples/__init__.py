"""Example strategies: start here to write your own."""
