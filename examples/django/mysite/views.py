import os

from django.http import HttpRequest, JsonResponse

import fh_prefork

FLAG = os.environ.get("EXAMPLE_FLAG", "NEW_CHECKOUT")


def index(request: HttpRequest) -> JsonResponse:
    ctx = fh_prefork.context()  # memory only: no I/O on the request path
    user = request.GET.get("user")
    if user:
        ctx = ctx.user_key(user)
    feature = ctx.feature(FLAG)
    return JsonResponse({"pid": os.getpid(), "flag": FLAG, "value": feature.get_value,
                         "version": feature.get_version, "enabled": bool(feature.get_value)})
