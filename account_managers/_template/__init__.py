"""The shape of a new broker: copy this folder, rename it, fill in every method.

Not a broker: every required method raises ``NotImplementedError`` naming itself, and the
engine refuses to load it. docs/brokers/WRITING.md walks through writing one.
"""
from account_managers._template.manager import TemplateAccountManager

__all__ = ["TemplateAccountManager"]
