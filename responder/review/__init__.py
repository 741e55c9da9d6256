"""`responder review`: a web page over a replies file to approve, edit, reject, regenerate and post drafts.

Server-rendered (FastAPI + Jinja2, autoescaped), a little plain JavaScript, every asset served by
the app itself (works offline). Starts without a model or a store: Regenerate builds the
responder on first use (or talks to `responder serve` with --server). Each change goes to the
replies file at once, atomically (`responder.jobs.drafts`); posting goes through the same ledger
as `responder post`.
"""
