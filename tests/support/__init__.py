"""Helpers for VGW's test suites: real components started and cleaned up by the tests."""
