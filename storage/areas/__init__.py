"""The storage seam by area: one `typing.Protocol` per area, its contract in docstrings.

`storage.protocol.Storage` inherits them all; tests/storage/test_<area>_contract.py
checks each on every backend. The rules stated on `Storage` (errors, limits, calls after
`close()`) hold for every method here.
"""
