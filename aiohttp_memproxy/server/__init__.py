"""The HTTP edge: admission, authentication and error rendering (middlewares), body validation, one module
of routes per API, the ops routes, forward mode, and the stream writer. Handlers parse, make one call, and
render."""
