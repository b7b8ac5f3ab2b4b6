// What a refused request turns into: `ApiError`, with the server's code and message.

export class ApiError extends Error {
  constructor(message, { code = "error", status = 0, details = {} } = {}) {
    super(message);
    this.code = code;
    this.status = status;
    this.details = details; // the rest of the error body, e.g. `state` and `allowed` of a refused transition
  }
}

/** The `{"error": {"code", "message"}}` body of a refused request, as an ApiError. */
export function errorFromBody(status, text, fallback) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) {
      return new ApiError(body.error.message, { code: body.error.code || "error", status, details: body.error });
    }
  } catch (_) {
    // Not JSON: a proxy's error page, for example.
  }
  return new ApiError(fallback || `The server answered ${status}.`, { code: "http_error", status });
}
