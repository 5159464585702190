"""Flashing and provisioning Pico boards over USB (`picogate boards`, `picogate flash`)."""
