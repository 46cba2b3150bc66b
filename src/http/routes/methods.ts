import type { NextFunction, Request, Response, Router } from "express";
import { ApiError } from "../errors.js";

/**
 * Answers 405 METHOD_NOT_ALLOWED, with `Allow`, for any other method on `path`. Added after
 * the path's handlers, it sees only the requests none of them took (HEAD is GET's).
 */
export function otherMethodsRefused(
  router: Router,
  path: string,
  allowed: readonly ("GET" | "POST")[],
): void {
  const allow = allowed.flatMap((m) => (m === "GET" ? ["GET", "HEAD"] : [m])).join(", ");
  router.all(path, (req: Request, res: Response, next: NextFunction) => {
    res.set("Allow", allow);
    next(new ApiError("METHOD_NOT_ALLOWED", `${req.method} is not allowed here; this path takes ${allow}`));
  });
}
