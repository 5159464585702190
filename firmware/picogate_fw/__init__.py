# Picogate firmware package (MicroPython). main.py (at the filesystem root) starts picogate_fw.app.
VERSION = "0.1.0"
