"""The one place that sees every call: rules across methods (who may call what, quotas, audit,
metrics) are call policies, never code in the methods (docs/design.md, "Calls: context and
policy").

The dispatcher asks its policy to :meth:`~CallPolicy.admit` each call (each member of a batch
alike) once its params are bound and before its method runs, and tells it how each call was
:meth:`~CallPolicy.served`; the control relay tells it of forwarded calls once they are answered.
Every hook runs on the aggregator's loop, one call at a time.
"""

from __future__ import annotations

from pydantic import BaseModel

from bus_tasks.protocol.context import CallContext
from bus_tasks.protocol.methods import MethodName

RPC_OUTCOMES = ("ok", "error", "denied", "timeout", "internal_error")
"""How a call can end: answered with a result, with an error (another policy's refusal included),
with -32011 because its caller may not make it (SPEC 16), with code 100 because its subsystem did
not answer in time, or with -32603 because its method crashed."""


class CallPolicy:
    """A policy with nothing to say: admits every call, ignores how it ended. Override either hook."""

    def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
        """Called before ``method`` runs with ``params`` for the caller of ``context``.

        Raises:
            BusTasksError: to refuse the call: it has no effect, and is answered with this error.
        """

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        """Called once per call answered: ``method`` as called (an alias, or a name of no method),
        ``outcome`` one of :data:`RPC_OUTCOMES`, ``seconds`` from its arrival to its answer,
        ``params`` as bound (None when the call was refused before: unparsable, no such method)."""


class Policies(CallPolicy):
    """Several policies as one: asked in order (the first refusal answers the call), all told."""

    def __init__(self, *policies: CallPolicy) -> None:
        self.policies = policies

    def admit(self, context: CallContext, method: MethodName, params: BaseModel) -> None:
        for policy in self.policies:
            policy.admit(context, method, params)

    def served(
        self,
        context: CallContext,
        method: str,
        outcome: str,
        seconds: float,
        *,
        params: BaseModel | None = None,
    ) -> None:
        for policy in self.policies:
            policy.served(context, method, outcome, seconds, params=params)


ADMIT_ALL = CallPolicy()
