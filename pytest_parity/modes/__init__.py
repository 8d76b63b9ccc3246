"""The checks, one module per mode: convert (one model against its own conversion), port (two hand-written models,
weights carried from one to the other), cross_device (one model on the CPU and on cuda). steps holds what the modes
share; no mode imports another."""
