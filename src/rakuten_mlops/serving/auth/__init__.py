"""The auth wing: users, passwords, tokens and API keys, start-up secrets, the principal
cache, rate limits, pre-authentication answers and input limits, wired into the app."""
