// Generic JSON API for enrich steps (SPEC §5 http, §7): POST of the step's input as the JSON
// body, the 2xx JSON object answer is the step's output.
#include <stdexcept>

#include "connectors/connector.h"
#include "http/json_limits.h"
#include "server_free.h" // last: no include above may bring in postgres.h

namespace switchboard {

namespace {

std::string
Describe(const HttpResponse &response)
{
	std::string head = "HTTP " + std::to_string(response.status);
	return response.body.empty() ? head : head + ": " + Snippet(response.body, 300);
}

class HttpJsonConnector : public Connector {
public:
	// One request answers one step of one run.
	size_t BulkLimit() const override { return 1; }

	std::string NotARouteTarget() const override
	{
		return "is an http endpoint, which enriches records in steps but is not a route target";
	}

	bool Enriches() const override { return true; }

	HttpRequest BuildEnrichRequest(const Endpoint &endpoint, const EnrichInput &input, const Auth &auth) const override
	{
		if (input.input.is_null())
			throw std::invalid_argument("the body (input) is NULL for this row");
		HttpRequest request;
		request.method = "POST";
		request.url = endpoint.base_url;
		std::string bearer = auth.bearer.empty() ? endpoint.secret : auth.bearer;
		if (!bearer.empty())
			request.headers.emplace_back("Authorization", auth.masked ? "Bearer ****" : "Bearer " + bearer);
		request.headers.emplace_back("Content-Type", "application/json");
		request.headers.emplace_back("Accept", "application/json");
		AppendOptionHeaders(endpoint, &request.headers);
		request.body = input.input.dump();
		return request;
	}

	EnrichResult ParseEnrichResult(const HttpResponse &response) const override
	{
		EnrichResult result;
		result.http_status = response.status;
		if (response.status >= 200 && response.status < 300) {
			std::string refused;
			Json body = TryParseRemoteJson(response.body, &refused);
			if (!refused.empty() || !body.is_object()) {
				// The service answered, but not with what a step can use: asking again gives
				// the same answer.
				result.outcome = Outcome::Dead;
				result.error = "answer is not a JSON object" + (refused.empty() ? "" : " (" + refused + ")") + ": " +
				               Snippet(response.body);
				return result;
			}
			result.outcome = Outcome::Delivered;
			result.output = std::move(body);
			return result;
		}
		ClassifyFailedEnrich(response, response.status == 0 ? "" : Describe(response), RetryAfterMs(response), &result);
		return result;
	}

	// Routes never target this kind (NotARouteTarget); enrich steps of many runs are sent
	// through the dispatcher with these (EnrichCalls in connector.h).
	std::vector<Call> BuildCalls(const Endpoint &endpoint, const Route &, const std::vector<Change> &changes,
	                             const Auth &auth) const override
	{
		return EnrichCalls(*this, endpoint, changes, auth);
	}

	CallResult ParseResult(const Call &call, const std::vector<Change> &changes,
	                       const HttpResponse &response) const override
	{
		return EnrichCallResult(*this, call, changes, response);
	}
};

} // namespace

std::unique_ptr<Connector>
MakeHttpJsonConnector()
{
	return std::make_unique<HttpJsonConnector>();
}

} // namespace switchboard
