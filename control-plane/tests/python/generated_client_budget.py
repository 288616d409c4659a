"""A budget round trip through a client generated from the served OpenAPI document.

Run by control-plane/tests/openapi_client.rs, which serves the document, generates the client
package `tollgate_client` from it with openapi-python-client (pinned in
scripts/requirements.txt) and runs this script with the package on sys.path:

    generated_client_budget.py BASE_URL ADMIN_TOKEN

It creates an org and a budget on it through the generated client's typed models, reads the
budget back by id and from the list, and fails unless every read equals what the create
answered and the fields equal what was sent. Prints one line saying what it checked.
"""

import sys
from decimal import Decimal

from tollgate_client import AuthenticatedClient
from tollgate_client.api.default import (
    get_v1_budgets,
    get_v1_budgets_id,
    post_v1_budgets,
    post_v1_orgs,
)
from tollgate_client.models import (
    BudgetView,
    Mode,
    NewBudget,
    NewOrg,
    Org,
    Period,
    Scope,
)


def main() -> None:
    base_url, admin = sys.argv[1], sys.argv[2]
    client = AuthenticatedClient(base_url=base_url, token=admin, raise_on_unexpected_status=True)

    org = post_v1_orgs.sync(client=client, body=NewOrg(name="Generated client", id="gen-acme"))
    assert isinstance(org, Org), f"creating the org answered {org!r}"

    sent = NewBudget(
        scope=Scope.ORG,
        scope_id=org.id,
        period=Period.MONTHLY,
        limit_usd="125.50",
        soft_limit_usd="100",
        mode=Mode.SHADOW,
        timezone="Europe/Paris",
    )
    created = post_v1_budgets.sync(client=client, body=sent)
    assert isinstance(created, BudgetView), f"creating the budget answered {created!r}"
    # What was sent is what the control plane stored (money compared as decimals: the
    # document says only that it is a decimal string).
    assert created.scope == Scope.ORG and created.scope_id == "gen-acme", created
    assert created.period == Period.MONTHLY and created.mode == Mode.SHADOW, created
    assert created.timezone == "Europe/Paris", created
    assert Decimal(created.limit_usd) == Decimal("125.50"), created
    assert Decimal(created.soft_limit_usd) == Decimal("100"), created
    assert Decimal(created.spent_usd) == 0, created

    read = get_v1_budgets_id.sync(created.id, client=client)
    assert isinstance(read, BudgetView), f"reading the budget answered {read!r}"
    assert read == created, f"read back {read!r}\nbut created {created!r}"
    assert read.to_dict() == created.to_dict()

    listed = get_v1_budgets.sync(client=client)
    assert isinstance(listed, list), f"listing budgets answered {listed!r}"
    assert [b for b in listed if b.id == created.id] == [created], listed

    print(f"generated client: budget {created.id} created, read back and listed equal")


if __name__ == "__main__":
    main()
