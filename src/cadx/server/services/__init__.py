"""Use cases of the web system (analysis of an upload, studies, reports), called by the thin routers."""
