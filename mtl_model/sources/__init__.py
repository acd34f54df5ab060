"""Where data comes from: dataset adapters (``tandem ingest``) and the simulator (``tandem simulate``).

Both write the landing zone of the contract in :mod:`mtl_model.contract`; the night never imports this
package (it reads what landed).
"""
