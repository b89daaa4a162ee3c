"""The dashboard: server-rendered pages under /, a little plain JavaScript for live updates, no build
step. Signed in by a token kept in an HttpOnly cookie (`session`); pages read the store directly and
the scripts call the same JSON API that bearer tokens use."""
