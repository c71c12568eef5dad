"""Pure decisions about a request: which model it names (exact, alias, dated id, wildcard) and which memory
user it belongs to."""
