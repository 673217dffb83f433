"""Fault injection: the real daemon process against the simulator, mosquitto and a receiver."""
