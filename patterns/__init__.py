"""Pattern files that chain capabilities, their loader and the compiler to LangGraph."""
