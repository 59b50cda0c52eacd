"""Pure IR: frozen dataclasses shared by the translator and the xDS builder."""
