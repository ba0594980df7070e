"""The broker template covers the whole contract, so a copy of it misses no method."""
import inspect

import pytest

from account_managers._template import TemplateAccountManager
from maotrade.account_manager import BaseAccountManager


def test_the_template_writes_every_required_method_of_the_contract():
    required = set(BaseAccountManager.__abstractmethods__)
    assert required and not TemplateAccountManager.__abstractmethods__
    written = {name for name, _ in inspect.getmembers(TemplateAccountManager, inspect.isfunction)
               if name in vars(TemplateAccountManager)}
    assert required <= written, f"the template lacks {sorted(required - written)}"


@pytest.mark.parametrize("name", sorted(BaseAccountManager.__abstractmethods__ - {"do_async_request_order_open"}))
def test_each_unwritten_method_says_which_it_is(name):
    method = getattr(TemplateAccountManager, name)
    args = [None] * (len(inspect.signature(method).parameters) - 1)
    with pytest.raises(NotImplementedError, match=name):
        method(object.__new__(TemplateAccountManager), *args)
