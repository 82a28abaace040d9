"""The service layer: what the API's routes and the console's pages both do.

Classify products (`classify`), record a reviewer's code (`review`), describe the models in
service (`models`), manage users and API keys (`users`). The routes of `serving/api` and
the pages of `serving/console` call these functions, never each other, so both answer the
same result and the same errors (an `HTTPException` or a `RequestValidationError` naming the
field, which each side renders its own way: JSON for the API, a page for the console).
"""
