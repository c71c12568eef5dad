"""Everything that leaves the gateway: the one aiohttp session and its cookie jar, the httpx transport
LiteLLM sends through, egress (proxies, CAs, no redirects), and the state of the gateway call in progress."""
