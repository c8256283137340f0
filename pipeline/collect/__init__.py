"""The HTTP collector: the front door for beacons, pixels, email links and contacts."""
