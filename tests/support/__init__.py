"""Helpers the tests share: generated images, tiny models, fuzzing and hostile inputs."""
