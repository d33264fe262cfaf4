from __future__ import annotations

import pytest

from .instance import Instance


@pytest.fixture
def instance(request):
    inst = Instance(request.node.name[:20].replace("[", "-").replace("]", ""))
    yield inst
    inst.cleanup()
