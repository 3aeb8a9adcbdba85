/**
 * A page's error (announced as an alert) and notice (a status), each shown only when set.
 */
export function Messages({ error, notice }: { error?: string | undefined; notice?: string | undefined }) {
  return (
    <>
      {error !== undefined && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {notice !== undefined && (
        <p role="status" className="notice">
          {notice}
        </p>
      )}
    </>
  );
}
