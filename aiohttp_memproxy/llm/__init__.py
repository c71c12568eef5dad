"""The only package that imports LiteLLM: the gateway object (a method per API call), its clients, the
adaptation of a call to each deployment, stream adaptation, LiteLLM's Router, the exception table, pricing,
and every patch of LiteLLM (``patches``, whose ``VERIFIED_ON`` is the version every statement about LiteLLM's
internals in this package was read in)."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before any module here imports LiteLLM
