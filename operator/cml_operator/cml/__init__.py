"""Talking to the CML controller on a worker: exceptions, the error table, the client, response models."""
