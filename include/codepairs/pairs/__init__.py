"""Instruction -> response pairs made from crawled commits and GitHub records."""
