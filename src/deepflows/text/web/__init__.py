"""The Talk to Books and Semantris web app: a JSON API (app.py) with plain HTML/JS pages (static/) on top."""
