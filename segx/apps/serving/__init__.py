"""The prediction server: the HTTP app and the checks on untrusted request input."""
