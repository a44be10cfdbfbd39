"""The wire format: client frames parsed and checked, server frames built once, message ids."""
