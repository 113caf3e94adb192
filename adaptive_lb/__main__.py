from adaptive_lb.cli import entry

entry()
