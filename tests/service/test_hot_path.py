"""The request path's cheap-by-construction properties (the load numbers: README, Load)."""

import importlib
import inspect
import pkgutil

from fastapi.routing import APIRoute

import heta_service.routes
from heta_service.settings import Settings


def _calls(dependant):
    for sub in dependant.dependencies:
        yield sub.call
        yield from _calls(sub)


def test_no_dependency_of_a_route_runs_in_the_thread_pool():
    # FastAPI runs a plain `def` dependency in its thread pool: a thread hop per dependency per request
    modules = [
        importlib.import_module(f"heta_service.routes.{m.name}")
        for m in pkgutil.iter_modules(heta_service.routes.__path__)
    ]
    # (routes.guide mounts static files: no dependencies, no router)
    routes = [
        route
        for module in modules
        if hasattr(module, "router")
        for route in module.router.routes
        if isinstance(route, APIRoute)
    ]
    assert {"/attribute", "/attribute/batch", "/metrics", "/queue"} <= {route.path for route in routes}
    for route in routes:
        for call in _calls(route.dependant):
            assert inspect.iscoroutinefunction(call), f"{route.path}: {call.__name__} is not async"


def test_a_submission_solves_three_dependencies():
    # FastAPI solves each dependency of each request separately (~20 µs apiece): the app's services
    # come as one bundle, and the submission's rate count rides on the enqueue script
    from heta_service.routes import attribute

    routes = {(route.path, *route.methods): route for route in attribute.router.routes if isinstance(route, APIRoute)}
    for key in [("/attribute", "POST"), ("/attribute/batch", "POST"), ("/jobs", "POST")]:
        assert sorted(call.__name__ for call in _calls(routes[key].dependant)) == [
            "_services",
            "authenticated",
            "submitter",
        ]


def test_the_access_log_is_a_setting_and_off_by_default():
    assert Settings().access_log is False
    assert Settings(access_log=True).access_log is True
