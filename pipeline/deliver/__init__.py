"""Webhook delivery of triggers (CONTRACT §5 ``destinations``): ``ma-pipeline deliver``."""
