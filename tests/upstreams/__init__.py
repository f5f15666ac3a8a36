"""Fake upstream providers (Google, OpenAI) that tests run the proxy against."""
