"""``stfn serve``: an HTTP API and a web page for trained checkpoints, and a browser for prepared
data sets. Needs the ``serve`` extra (``pip install "stfn[serve]"``: FastAPI, uvicorn,
python-multipart).

- :mod:`stfn.serve.app`: the FastAPI application (:func:`~stfn.serve.app.create_app`) and its routes;
- :mod:`stfn.serve.models`: the loaded checkpoints;
- :mod:`stfn.serve.pool`: the bounded worker pool (503 with ``Retry-After`` beyond its queue);
- :mod:`stfn.serve.uploads`: streaming uploads into a temporary folder, the size limit checked as
  the bytes arrive;
- :mod:`stfn.serve.prepared`: the prepared-set browser;
- ``static/``: the page (HTML, CSS, JavaScript; no build step, no CDN).
"""
