"""Wire codecs: pure functions between HTTP bodies and core types."""
