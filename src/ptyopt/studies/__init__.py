"""Controlled studies: settings × seeds, run in parallel, evaluated and reported with statistics."""
