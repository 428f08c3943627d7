"""Routing (DESIGN.md §4b): from a notification and its recipient to the channel plan
committed with it. Routing decides, with absolute times; actors only execute them."""
