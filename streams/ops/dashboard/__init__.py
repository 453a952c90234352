"""`streamfer dashboard`: scrapes (pure arithmetic), the collector, the web server and its page."""
