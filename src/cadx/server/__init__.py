"""The cadx web system: FastAPI app, accounts, studies database, PDF reports and the upload page.

Import :func:`cadx.server.app.create_app` to build the ASGI app; ``cadx serve`` runs it with uvicorn.
"""
